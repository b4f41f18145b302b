"""The AlphaFold2/OpenFold model: modules, kernel dispatch and chunking.

Parameter names follow OpenFold's ``state_dict`` layout (``shared/spec/openfold_state_dict.tsv``),
which is sparkfold's canonical layout; other formats are mapped onto it in ``sparkfold.weights``.
"""

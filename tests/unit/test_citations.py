"""Every `AF2 Suppl. Alg. N "Name"` citation in the code names the right algorithm (STYLE)."""

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "sparkfold"

#: Algorithm numbers of the AlphaFold2 supplementary information (Jumper et al. 2021).
AF2_ALGORITHMS = {
    2: "Inference",
    3: "InputEmbedder",
    4: "relpos",
    5: "one_hot",
    6: "EvoformerStack",
    7: "MSARowAttentionWithPairBias",
    8: "MSAColumnAttention",
    9: "MSATransition",
    10: "OuterProductMean",
    11: "TriangleMultiplicationOutgoing",
    12: "TriangleMultiplicationIncoming",
    13: "TriangleAttentionStartingNode",
    14: "TriangleAttentionEndingNode",
    15: "PairTransition",
    16: "TemplatePairStack",
    17: "TemplatePointwiseAttention",
    18: "ExtraMsaStack",
    19: "MSAColumnGlobalAttention",
    20: "StructureModule",
    21: "rigidFrom3Points",
    22: "InvariantPointAttention",
    23: "BackboneUpdate",
    24: "computeAllAtomCoordinates",
    25: "makeRotX",
    29: "predictPerResidueLDDT_Ca",
    32: "RecyclingEmbedder",
}

CITATION = re.compile(r'AF2 Suppl\. Alg\. (\d+) "([A-Za-z_0-9]+)"')


def test_citations_match_the_algorithm_table():
    found = 0
    wrong = []
    for path in SRC.rglob("*.py"):
        for number, name in CITATION.findall(path.read_text()):
            found += 1
            expected = AF2_ALGORITHMS.get(int(number))
            if expected != name:
                wrong.append(f"{path.relative_to(SRC)}: Alg. {number} {name!r} (table: {expected!r})")
    assert found > 20, "the model modules should cite their algorithms"
    assert not wrong, "\n".join(wrong)

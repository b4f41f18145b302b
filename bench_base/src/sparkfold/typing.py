"""Shape-annotated tensor aliases (jaxtyping) and the dimension glossary.

Glossary of dimension names used in annotations:

* ``*batch`` — any leading batch dimensions (``*#batch``: broadcastable to them, e.g. a mask
  with a size-1 template axis);
* ``n_seq`` — MSA rows (clusters, extra rows, or template rows appended to the MSA);
* ``n_res`` — residues;
* ``n_templ`` — templates;
* ``heads`` — attention heads;
* ``c_m``, ``c_z``, ``c_s``, ``c_t``, ``c_e``, ``c_hidden`` — channels of the MSA, pair, single,
  template-pair and extra-MSA representations and of a module's hidden layer.

Annotations are documentation in library code; tests check them at run time through
``jaxtyping.install_import_hook`` (``tests/conftest.py``). Nothing else lives here.
"""

import torch
from jaxtyping import Float, Int

Tensor = torch.Tensor

#: ``[*batch, n_seq, n_res, c_m]`` MSA representation (also the extra MSA with c_e).
MsaAct = Float[Tensor, "*batch n_seq n_res c_m"]
#: ``[*batch, n_seq, n_res, c_in]`` MSA input features (msa_feat, extra-MSA features).
MsaFeat = Float[Tensor, "*batch n_seq n_res c_in"]
#: ``[*batch, n_res, n_res, c_z]`` pair representation (also a template's pair with c_t).
PairAct = Float[Tensor, "*batch n_res n_res c_z"]
#: ``[*batch, n_res, c_s]`` single representation.
SingleAct = Float[Tensor, "*batch n_res c_s"]
#: ``[*batch, n_seq, n_res]`` MSA mask (broadcastable batch axes).
MsaMask = Float[Tensor, "*#batch n_seq n_res"]
#: ``[*batch, n_res, n_res]`` pair mask (broadcastable batch axes).
PairMask = Float[Tensor, "*#batch n_res n_res"]
#: ``[*batch, ..., c]`` any channel-last activation (transitions).
Act = Float[Tensor, "*batch c"]
#: ``[*batch, ...]`` mask of an activation without its channel axis.
ActMask = Float[Tensor, "*#batch"]
#: ``[*batch, n_res]`` residue indices / amino-acid types.
ResidueIndex = Int[Tensor, "*batch n_res"]
#: ``[*batch, n_res, c]`` per-residue features or activations (target_feat, MSA row 0).
ResidueAct = Float[Tensor, "*batch n_res c"]
#: ``[*batch, n_res, 3]`` one point per residue (e.g. pseudo-β positions), Å.
ResiduePoints = Float[Tensor, "*batch n_res 3"]
#: ``[*batch, n_templ, n_res, n_res, c_t]`` template pair representations.
TemplatePairAct = Float[Tensor, "*batch n_templ n_res n_res c_t"]
#: ``[*batch, n_templ]`` template mask.
TemplateMask = Float[Tensor, "*#batch n_templ"]

__all__ = [
    "Act",
    "ActMask",
    "MsaAct",
    "MsaFeat",
    "MsaMask",
    "PairAct",
    "PairMask",
    "ResidueAct",
    "ResidueIndex",
    "ResiduePoints",
    "SingleAct",
    "TemplateMask",
    "TemplatePairAct",
    "Tensor",
]

"""Self-contained modules that travel with exported models.

Everything here imports only the standard library, torch, transformers (and timm where present) and
its siblings, by relative import: ``save_pretrained`` copies ``modeling_*.py`` / ``configuration_*.py``
and the siblings they import next to the weights, so an exported folder loads with
``trust_remote_code=True`` where hf-decomp is not installed. The library imports the same files, so
each piece (index-set checks, head kernels, CIFAR ResNets) has one source.
"""

"""maskpolicy: learned masking policies for masked-language-model pre-training.

The library lives in the layer packages ``policies``, ``tasks``, ``train``, ``meta`` and
``benchmarks``; this package holds the ``maskpolicy`` command.
"""
__version__ = "0.1.0"

"""Building blocks shared by the method plugins: backbone and weights, pyramid and top-K MIL
head, losses, balanced samplers, on-device augmentation and pseudo anomalies, training loop
helpers.

``COMMON_VERSION`` is folded into the version of every method that declares
``uses_common_blocks = True`` (``Method.full_version``), which is part of every run id: bump
it whenever a change here can change what a method computes, so results of the old blocks
are never reused as if they were new.
"""
COMMON_VERSION = "1"

"""Building blocks shared by the method plugins: backbone and weights, pyramid and top-K MIL
head, losses, balanced samplers, on-device augmentation and pseudo anomalies, training loop
helpers."""

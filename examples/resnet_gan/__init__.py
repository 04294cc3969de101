"""A small residual GAN with its own ``depth`` knob, trained on shapes drawn on the fly (see README.md)."""

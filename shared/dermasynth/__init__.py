"""DermaSynth: GAN-augmented skin-lesion classification, from synthesis to honest evaluation and serving."""

__version__ = "0.1.0"

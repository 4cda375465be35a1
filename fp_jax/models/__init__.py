"""Models: the FactorPortrait DiT, the video VAE, the expression and pose encoders."""

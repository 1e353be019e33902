"""Entry points launched with `accelerate launch`."""

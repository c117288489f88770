"""Pixel decoders: ``msdeformattn`` (Mask2Former, default) and ``fpn`` (light, for edge devices)."""
from segclip.modeling.pixel_decoder.fpn import FPNPixelDecoder
from segclip.modeling.pixel_decoder.msdeformattn import MSDeformAttnPixelDecoder


def build_pixel_decoder(cfg, in_channels):
    if cfg.pixel_decoder == "fpn":
        return FPNPixelDecoder(in_channels, cfg.hidden_dim, cfg.mask_dim)
    return MSDeformAttnPixelDecoder(
        in_channels, cfg.hidden_dim, cfg.mask_dim, cfg.enc_layers, cfg.enc_heads, cfg.enc_ffn, cfg.enc_points
    )

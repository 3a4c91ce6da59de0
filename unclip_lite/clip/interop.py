"""Move weights and configs between our CLIP and open_clip / OpenAI's release.

OpenAI's checkpoints and open_clip's ``CLIP`` share one state-dict layout, so one table
covers both. Our layout differs in five readable ways and is otherwise identical:

==============================  ==================================  =====================
ours                            open_clip / OpenAI                  why
==============================  ==================================  =====================
``text.*``                      top level (``transformer.*`` ...)   one module per tower
``text.proj``                   ``text_projection``                 same name both towers
``visual.patch_embed.*`` (ViT)  ``visual.conv1.*``                  says what it does
``*.blocks.N.*``                ``*.resblocks.N.*``                 every block is residual
``*.attn.qkv.{weight,bias}``    ``*.attn.in_proj_{weight,bias}``    an ordinary nn.Linear
==============================  ==================================  =====================

Tensors are never reshaped or transposed: every entry maps one-to-one, which is what makes
``ours -> open_clip -> ours`` an exact round trip.
"""
from __future__ import annotations

import os
from collections import OrderedDict

import torch

from unclip_lite.clip.configs import CLIPConfig, TextConfig, VisionConfig
from unclip_lite.clip.model import CLIP, build_clip

# (ours, open_clip, applies to). A pattern starting with "." may match mid-key; any other
# pattern must match at the start of the key.
KEY_MAP: list[tuple[str, str, str]] = [
    ("text.token_embedding.", "token_embedding.", "all"),
    ("text.positional_embedding", "positional_embedding", "all"),
    ("text.transformer.", "transformer.", "all"),
    ("text.ln_final.", "ln_final.", "all"),
    ("text.proj", "text_projection", "all"),
    ("visual.patch_embed.", "visual.conv1.", "vit"),  # in a ResNet, visual.conv1 is the stem: kept
    (".blocks.", ".resblocks.", "all"),
    (".attn.qkv.weight", ".attn.in_proj_weight", "all"),
    (".attn.qkv.bias", ".attn.in_proj_bias", "all"),
]

# Non-tensor entries OpenAI's original checkpoints carry alongside the weights.
_OPENAI_METADATA = ("input_resolution", "context_length", "vocab_size")
# open_clip's CustomTextCLIP keeps the text tower under "text." with these names.
_CUSTOM_TEXT_KEYS = ("text_projection", "positional_embedding", "token_embedding.", "transformer.", "ln_final.")


def _rename(key: str, to_ours: bool, is_resnet: bool) -> str:
    for ours, theirs, scope in KEY_MAP:
        if scope == "vit" and is_resnet:
            continue
        src, dst = (theirs, ours) if to_ours else (ours, theirs)
        if src.startswith("."):
            key = key.replace(src, dst)
        elif key.startswith(src) and (key == src or src.endswith(".")):
            key = dst + key[len(src):]
    return key


def _strip_prefix(key: str, prefix: str, followed_by: tuple[str, ...]) -> str:
    rest = key[len(prefix):]
    return rest if key.startswith(prefix) and rest.startswith(followed_by) else key


def _summarise(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def from_open_clip_state_dict(state_dict: dict, config: CLIPConfig) -> OrderedDict:
    """An open_clip or OpenAI CLIP state dict, renamed for our ``CLIP(config)``.

    Accepts open_clip's ``CLIP`` and ``CustomTextCLIP`` layouts, OpenAI's original files
    (their metadata entries are dropped) and DDP's ``module.`` prefix. Checks the result
    strictly: a missing or unexpected key, or a tensor of the wrong shape, is a ValueError
    naming the keys — typically the config does not describe the checkpoint.
    """
    sd = dict(state_dict)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    for k in _OPENAI_METADATA:
        sd.pop(k, None)
    if "text.text_projection" in sd:  # CustomTextCLIP -> CLIP layout: lift the text tower up
        sd = {_strip_prefix(k, "text.", _CUSTOM_TEXT_KEYS): v for k, v in sd.items()}

    is_resnet = config.vision.is_resnet
    ours = OrderedDict((_rename(k, to_ours=True, is_resnet=is_resnet), v) for k, v in sd.items())

    expected = build_clip(config, device="meta").state_dict()
    for k in set(expected) - set(ours):
        if k.endswith("num_batches_tracked"):  # some exports omit this BatchNorm counter
            ours[k] = torch.tensor(0, dtype=torch.long)
    missing, unexpected = set(expected) - set(ours), set(ours) - set(expected)
    if missing or unexpected:
        raise ValueError(
            "state dict does not match the config"
            + (f"; missing keys: {_summarise(missing)}" if missing else "")
            + (f"; unexpected keys: {_summarise(unexpected)}" if unexpected else "")
        )
    wrong = [
        f"{k}: expected {list(expected[k].shape)}, got {list(ours[k].shape)}"
        for k in expected
        if tuple(ours[k].shape) != tuple(expected[k].shape)
    ]
    if wrong:
        raise ValueError("state dict shapes do not match the config: " + "; ".join(wrong[:8]))
    return OrderedDict((k, ours[k]) for k in expected)  # our module order


def to_open_clip_state_dict(model: CLIP) -> OrderedDict:
    """Our model's state dict under open_clip's (= OpenAI's) names, for ``open_clip.CLIP``."""
    is_resnet = model.config.vision.is_resnet
    return OrderedDict(
        (_rename(k, to_ours=False, is_resnet=is_resnet), v) for k, v in model.state_dict().items()
    )


# ----------------------------------------------------------------------------- configs

_VISION_FIELDS = {"image_size", "layers", "width", "patch_size", "head_width", "mlp_ratio"}
_TEXT_FIELDS = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio"}
_TOP_FIELDS = {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg"}


def _check_supported(cfg: dict, supported: set[str], defaults, where: str, name: str) -> None:
    """Anything beyond the plain CLIP architecture must sit at open_clip's default value."""
    for key, value in cfg.items():
        if key in supported:
            continue
        default = getattr(defaults, key, object()) if defaults is not None else object()
        if value != default:
            raise ValueError(
                f"open_clip model {name!r} sets {where}{key}={value!r}, which unclip_lite's CLIP does not "
                f"implement (supported: {sorted(supported)})"
            )


def config_from_open_clip(model_name: str) -> CLIPConfig:
    """Our config for one of open_clip's built-in model configs (its JSON files; no download).

    ``"ViT-B-32"`` gives ``activation="gelu"`` and ``"ViT-B-32-quickgelu"`` gives
    ``"quick_gelu"``, as open_clip does; our own preset ``get_config("ViT-B-32")`` equals the
    latter. Architectures we do not implement (timm/HF towers, SigLIP, CoCa ...) raise.
    """
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    if model_name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {model_name!r}; see open_clip.list_models()")
    cfg = open_clip.get_model_config(model_name)
    vision, text = dict(cfg.get("vision_cfg", {})), dict(cfg.get("text_cfg", {}))
    _check_supported(cfg, _TOP_FIELDS, None, "", model_name)
    _check_supported(vision, _VISION_FIELDS, CLIPVisionCfg(), "vision_cfg.", model_name)
    _check_supported(text, _TEXT_FIELDS, CLIPTextCfg(), "text_cfg.", model_name)

    v_defaults, t_defaults = CLIPVisionCfg(), CLIPTextCfg()
    image_size = vision.get("image_size", v_defaults.image_size)
    if isinstance(image_size, (list, tuple)):
        if len(set(image_size)) != 1:
            raise ValueError(f"open_clip model {model_name!r} has non-square images {image_size}")
        image_size = image_size[0]
    layers = vision.get("layers", v_defaults.layers)
    width = vision.get("width", v_defaults.width)
    head_width = vision.get("head_width", v_defaults.head_width)
    is_resnet = isinstance(layers, (list, tuple))
    return CLIPConfig(
        embed_dim=cfg["embed_dim"],
        vision=VisionConfig(
            image_size=image_size,
            layers=tuple(layers) if is_resnet else layers,
            width=width,
            # open_clip derives heads from a head width; a ResNet's attention pool is 32 * width wide
            heads=(32 * width if is_resnet else width) // head_width,
            patch_size=None if is_resnet else vision.get("patch_size", v_defaults.patch_size),
            mlp_ratio=vision.get("mlp_ratio", v_defaults.mlp_ratio),
        ),
        text=TextConfig(**{k: text.get(k, getattr(t_defaults, k)) for k in sorted(_TEXT_FIELDS)}),
        activation="quick_gelu" if cfg.get("quick_gelu", False) else "gelu",
    )


def to_open_clip_config(config: CLIPConfig) -> dict:
    """The model config dict open_clip's ``CLIP(**cfg)`` takes, for any of our configs."""
    v, t = config.vision, config.text
    attn_width = 32 * v.width if v.is_resnet else v.width
    head_width = attn_width // v.heads
    if attn_width // head_width != v.heads:
        raise ValueError(f"open_clip cannot express {v.heads} heads over width {attn_width} (it stores a head width)")
    vision_cfg = {"image_size": v.image_size, "layers": list(v.layers) if v.is_resnet else v.layers,
                  "width": v.width, "head_width": head_width, "patch_size": v.patch_size}
    if not v.is_resnet:
        vision_cfg["mlp_ratio"] = v.mlp_ratio
    return {
        "embed_dim": config.embed_dim,
        "quick_gelu": config.activation == "quick_gelu",
        "vision_cfg": vision_cfg,
        "text_cfg": {"context_length": t.context_length, "vocab_size": t.vocab_size, "width": t.width,
                     "heads": t.heads, "layers": t.layers, "mlp_ratio": t.mlp_ratio},
        "init_logit_scale": config.init_logit_scale,
    }


# ----------------------------------------------------------------------------- pretrained


def load_open_clip_pretrained(name: str, pretrained: str, device: str | torch.device = "cpu") -> CLIP:
    """Our CLIP holding open_clip's pretrained weights ``name``/``pretrained`` (e.g. ``"ViT-B-32"``,
    ``"openai"``).

    This DOWNLOADS the checkpoint through open_clip (hundreds of MB to GB) unless it is
    already cached or ``pretrained`` is a local file; nothing else in unclip_lite touches the
    network and no test calls it. The activation follows the pretrained tag (OpenAI's
    weights need QuickGELU even under open_clip's plain model names).
    """
    import open_clip

    config = config_from_open_clip(name)
    tag = open_clip.get_pretrained_cfg(name, pretrained) or {}
    if tag.get("quick_gelu", False):
        config.activation = "quick_gelu"
    if not tag and not os.path.isfile(pretrained):
        raise ValueError(
            f"{pretrained!r} is neither a pretrained tag of {name!r} nor a file; "
            f"tags: {open_clip.list_pretrained_tags_by_model(name)}"
        )
    try:
        reference = open_clip.create_model(
            name, pretrained=pretrained, force_quick_gelu=config.activation == "quick_gelu",
            require_pretrained=True, device="cpu",
        )
    except Exception as e:  # network, cache or checksum trouble: say what to do about it
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise RuntimeError(
            f"could not load open_clip weights {name}/{pretrained}: {e}. This needs internet access"
            + (" (HF_HUB_OFFLINE=1 is set)" if offline else "")
            + " or a local checkpoint path as `pretrained`."
        ) from e
    model = CLIP(config)
    model.load_state_dict(from_open_clip_state_dict(reference.state_dict(), config))
    return model.to(device).eval()

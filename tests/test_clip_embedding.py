"""The CLIP-embedding interface (unclip_lite.clip.embedding): our bundles and an open_clip model
behind the same four names, checked against each other on the same weights."""
import open_clip
import torch

from unclip_lite.clip import build_clip, get_config, to_open_clip_config, to_open_clip_state_dict
from unclip_lite.clip.bundle import CLIPBundle
from unclip_lite.clip.embedding import OPENAI_MEAN, OPENAI_STD, CLIPEmbedder, OpenCLIPEmbedder
from unclip_lite.tokenizer import get_tokenizer


def twins():
    """Our CLIP with CLIP's full BPE vocabulary, and open_clip's CLIP holding the same weights."""
    config = get_config("shapes-tiny")
    config.text.vocab_size, config.text.eot_token_id = 49408, None  # the BPE, [EOS] = the largest id
    torch.manual_seed(0)
    ours = CLIPBundle(build_clip(config).eval(), None, OPENAI_MEAN, OPENAI_STD)
    theirs = open_clip.CLIP(**to_open_clip_config(config)).eval()
    theirs.load_state_dict(to_open_clip_state_dict(ours.model), strict=True)
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=config.text.context_length)
    return ours, OpenCLIPEmbedder(theirs, tokenizer, image_size=config.vision.image_size)


def test_our_bundle_and_an_open_clip_model_meet_the_interface_and_agree():
    ours, theirs = twins()
    for embedder in (ours, theirs):
        assert isinstance(embedder, CLIPEmbedder)
    assert ours.dim == theirs.dim == ours.model.config.embed_dim
    texts = ["a red star", "a blue circle to the left of a green square"]
    images = torch.rand(3, 3, ours.image_size, ours.image_size, generator=torch.Generator().manual_seed(1))
    for normalize in (True, False):
        a, b = ours.embed_text(texts, normalize), theirs.embed_text(texts, normalize)
        assert a.shape == (2, ours.dim) and torch.allclose(a, b, atol=1e-5)
        a, b = ours.embed_image(images, normalize), theirs.embed_image(images, normalize)
        assert a.shape == (3, ours.dim) and torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(ours.embed_text(texts).norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(ours.embed_text(texts, normalize=False).norm(dim=-1), torch.ones(2), atol=1e-3)
    # our tokenizer is open_clip's: same ids, so the texts above really went through the same path
    assert torch.equal(get_tokenizer()(texts, context_length=ours.context_length),
                       open_clip.get_tokenizer("ViT-B-32", context_length=ours.context_length)(texts))


def test_the_adapter_resizes_images_to_its_model():
    _, theirs = twins()
    big = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    small = torch.nn.functional.interpolate(big, size=(theirs.image_size,) * 2, mode="bicubic", align_corners=False)
    assert torch.allclose(theirs.embed_image(big), theirs.embed_image(small), atol=1e-6)
    assert not torch.allclose(theirs.embed_image(big), theirs.embed_image(big.flip(-1)), atol=1e-3)

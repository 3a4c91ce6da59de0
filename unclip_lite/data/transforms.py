"""open_clip's image transforms: what a CLIP sees of a real photograph.

open_clip (``open_clip.transform.image_transform``, with its default ``AugmentationCfg``)
trains on

    RandomResizedCrop(size, scale=(0.9, 1.0), bicubic) -> RGB -> ToTensor -> Normalize(mean, std)

a random crop of 90-100% of the area, any aspect ratio in [3/4, 4/3], resized square; and
evaluates on

    Resize(size, bicubic) (shorter side) -> CenterCrop(size) -> RGB -> ToTensor -> Normalize(mean, std)

with OpenAI's dataset mean and standard deviation (Radford et al. 2021 trained and released
their models with them). The same torchvision operations in the same order, so the output is
identical to open_clip's, the train crop included when torch's RNG is in the same state
(``PairStream`` seeds it per sample). Inputs are PIL images (bicubic resizing on PIL and on
tensors differ slightly).

``normalize=False`` stops at ToTensor: pixels in [0, 1], what a diffusion model's data wants.
"""
from __future__ import annotations

from torchvision import transforms as T

OPENAI_DATASET_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip.constants
OPENAI_DATASET_STD = (0.26862954, 0.26130258, 0.27577711)
TRAIN_CROP_SCALE = (0.9, 1.0)  # open_clip's AugmentationCfg default


class ToRGB:
    """Convert a PIL image to RGB if it is not (open_clip's ``MaybeConvertMode``); picklable for workers."""

    def __call__(self, image):
        return image if image.mode == "RGB" else image.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


def image_transform(size: int, train: bool, *, crop_scale: tuple[float, float] = TRAIN_CROP_SCALE,
                    mean: tuple[float, float, float] = OPENAI_DATASET_MEAN,
                    std: tuple[float, float, float] = OPENAI_DATASET_STD, normalize: bool = True) -> T.Compose:
    """PIL image -> float tensor [3, size, size]: open_clip's train (random crop) or eval transform."""
    if size < 1:
        raise ValueError(f"image size must be positive, got {size}")
    if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
        raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
    if train:
        steps = [T.RandomResizedCrop(size, scale=crop_scale, interpolation=T.InterpolationMode.BICUBIC)]
    else:
        steps = [T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)]
    steps += [ToRGB(), T.ToTensor()]
    if normalize:
        steps.append(T.Normalize(mean=mean, std=std))
    return T.Compose(steps)

"""Plausible wrong answers to chapter 01's machinery exercises (attention, the transformer block, the
ViT stem); tests/test_exercises.py loads this file. The older ch01 wrong answers live in that file."""
import math

import torch
import torch.nn.functional as F
from einops import rearrange

from unclip_lite.exercises.ch01 import PatchEmbedding, TransformerBlock, attention


# --- ch01.attention --------------------------------------------------------------------------------
def attention_unscaled(q, k, v, mask=None):  # forgot the 1/√d: the softmax is too peaked
    scores = q @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1) @ v


def attention_mask_inverted(q, k, v, mask=None):  # blocks where the mask says "may attend"
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    return scores.softmax(-1) @ v


def attention_softmax_over_queries(q, k, v, mask=None):  # normalises each key's column, not each query's row
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-2) @ v


def attention_mask_after_softmax(q, k, v, mask=None):  # zeroes blocked weights after the softmax: rows no longer sum to 1
    weights = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1)
    if mask is not None:
        weights = weights * mask
    return weights @ v


# --- ch01.TransformerBlock --------------------------------------------------------------------------
def _attend(block, h, mask):
    q, k, v = rearrange(block.attn.qkv(h), "b l (three h d) -> three b h l d", three=3, h=block.heads)
    return block.attn.out_proj(rearrange(attention(q, k, v, mask), "b h l d -> b l (h d)"))


def _mlp(block, h):
    return block.mlp.c_proj(F.gelu(block.mlp.c_fc(h)))


class BlockPostLN(TransformerBlock):  # post-LN (the 2017 Transformer): normalises the residual stream itself
    def forward(self, x, mask=None):
        x = self.ln_1(x + _attend(self, x, mask))
        return self.ln_2(x + _mlp(self, x))


class BlockNoResidual(TransformerBlock):  # the attention branch replaces x instead of adding to it
    def forward(self, x, mask=None):
        x = _attend(self, self.ln_1(x), mask)
        return x + _mlp(self, self.ln_2(x))


class BlockIgnoresMask(TransformerBlock):  # never passes the mask on: the text tower sees the future
    def forward(self, x, mask=None):
        x = x + _attend(self, self.ln_1(x), None)
        return x + _mlp(self, self.ln_2(x))


class BlockOneNorm(TransformerBlock):  # ln_1 before both branches: ln_2's weights are never used
    def forward(self, x, mask=None):
        x = x + _attend(self, self.ln_1(x), mask)
        return x + _mlp(self, self.ln_1(x))


# --- ch01.PatchEmbedding ----------------------------------------------------------------------------
def _patches(stem, images):
    return rearrange(stem.patch_embed(images), "b d gh gw -> b (gh gw) d")  # [B, N, D]


def _class_token(stem, x):
    return stem.class_embedding.expand(x.shape[0], 1, -1)  # [B, 1, D]


class StemClassTokenLast(PatchEmbedding):  # appends the class token after the patches
    def forward(self, images):
        x = _patches(self, images)
        return self.ln_pre(torch.cat([x, _class_token(self, x)], 1) + self.positional_embedding)


class StemPositionsFirst(PatchEmbedding):  # adds the 1 + N positions to the N patches: the shapes do not match
    def forward(self, images):
        x = _patches(self, images) + self.positional_embedding
        return self.ln_pre(torch.cat([_class_token(self, x), x], 1))


class StemPositionsSlicedToFit(PatchEmbedding):  # positions before the class token, cut to N: all shifted by one
    def forward(self, images):
        x = _patches(self, images)
        x = x + self.positional_embedding[: x.shape[1]]
        return self.ln_pre(torch.cat([_class_token(self, x), x], 1))


class StemNoPositions(PatchEmbedding):  # no positions: the transformer sees a bag of patches
    def forward(self, images):
        x = _patches(self, images)
        return self.ln_pre(torch.cat([_class_token(self, x), x], 1))


class StemNoLnPre(PatchEmbedding):  # forgot CLIP's ln_pre
    def forward(self, images):
        x = _patches(self, images)
        return torch.cat([_class_token(self, x), x], 1) + self.positional_embedding


WRONG_ANSWERS = {
    "ch01.attention": [attention_unscaled, attention_mask_inverted, attention_softmax_over_queries,
                       attention_mask_after_softmax],
    "ch01.TransformerBlock": [BlockPostLN, BlockNoResidual, BlockIgnoresMask, BlockOneNorm],
    "ch01.PatchEmbedding": [StemClassTokenLast, StemPositionsFirst, StemPositionsSlicedToFit, StemNoPositions,
                            StemNoLnPre],
}

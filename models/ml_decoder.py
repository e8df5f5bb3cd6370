"""ML-Decoder (Ridnik et al., 2021) as a head that works on today's PyTorch
and passes torch.jit.script.

The official code wraps its decoder layer in nn.TransformerDecoder, which on
torch >= 2.1 reads `layers[0].self_attn`, an attribute a layer without
self-attention lacks. Here the layer is called directly. The group
fully-connected layer is one batched matmul instead of a Python loop over
the groups, and the class and group counts are read from the tensors' shapes,
so that asl can give the head another class count by replacing three tensors.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

# The published settings.
FEEDFORWARD = 2048
HEADS = 8
DROPOUT = 0.1


def group_count(num_classes, num_groups):
    """K = min(num_groups, N) queries; each answers for ceil(N / K) classes."""
    return min(num_groups, num_classes)


class DecoderLayerWithoutSelfAttention(nn.Module):
    """The target plus its dropout, LayerNorm, cross-attention to the image
    tokens, and a feed-forward block: three residuals, three LayerNorms."""

    def __init__(self, dim, heads=HEADS, feedforward=FEEDFORWARD, dropout=DROPOUT):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, feedforward)
        self.linear2 = nn.Linear(feedforward, dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, target: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        target = self.norm1(target + self.dropout1(target))
        attended = self.cross_attn(target, memory, memory, need_weights=False)[0]
        target = self.norm2(target + self.dropout2(attended))
        hidden = self.linear2(self.dropout(F.relu(self.linear1(target))))
        return self.norm3(target + self.dropout3(hidden))


class MLDecoderHead(nn.Module):
    """Feature map [B, C, H, W] (or tokens [B, L, C]) -> logits [B, N]."""

    def __init__(self, num_features, num_classes, num_groups=100, embedding=768):
        super().__init__()
        groups = group_count(num_classes, num_groups)
        per_group = math.ceil(num_classes / groups)
        self.proj = nn.Linear(num_features, embedding)
        # Fixed, randomly drawn queries, as in the paper (nn.Embedding's N(0, 1)).
        self.queries = nn.Parameter(torch.randn(groups, embedding), requires_grad=False)
        self.layer = DecoderLayerWithoutSelfAttention(embedding)
        self.group_weight = nn.Parameter(torch.empty(groups, embedding, per_group))
        self.group_bias = nn.Parameter(torch.zeros(num_classes))
        nn.init.xavier_normal_(self.group_weight)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        tokens = features.flatten(2).transpose(1, 2) if features.dim() == 4 else features
        tokens = F.relu(self.proj(tokens))
        queries = self.queries.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        decoded = self.layer(queries, tokens)
        # Group FC: query k's output times its own [D, ceil(N/K)] matrix, for all k in one bmm.
        grouped = torch.bmm(decoded.transpose(0, 1), self.group_weight).transpose(0, 1)
        return grouped.flatten(1)[:, : self.group_bias.shape[0]] + self.group_bias


class WithHead(nn.Module):
    """A timm backbone (its own classifier removed) followed by a head."""

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


# The official checkpoints' names (Alibaba-MIIL/ML_Decoder, under `<head>.decoder.`, where the
# head is `head` for TResNet and `fc` or `classifier` for other CNNs) and ours, under `head.`.
OFFICIAL_NAMES = [
    ("decoder.embed_standart.", "proj."),
    ("decoder.query_embed.weight", "queries"),
    ("decoder.layers.0.multihead_attn.", "layer.cross_attn."),
    ("decoder.layers.0.", "layer."),
    ("decoder.duplicate_pooling_bias", "group_bias"),
    ("decoder.duplicate_pooling", "group_weight"),
]
OFFICIAL_MARKER = "decoder.duplicate_pooling"


def official_head_prefix(state_dict):
    """`head.` (or `fc.`, …) when `state_dict` is an official ML-Decoder checkpoint, else None."""
    for key in state_dict:
        if key.endswith("." + OFFICIAL_MARKER):
            return key[: -len(OFFICIAL_MARKER)]
    return None


def is_official(state_dict):
    return official_head_prefix(state_dict) is not None


def remap_official(state_dict):
    """An official ML-Decoder state dict -> (backbone state dict, head state dict in our names).

    Raises KeyError naming a head key that has no counterpart here (for
    example the zero-shot variant's word-vector projection).
    """
    prefix = official_head_prefix(state_dict)
    backbone, head = {}, {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            backbone[key] = value
            continue
        rest = key[len(prefix):]
        for official, ours in OFFICIAL_NAMES:
            if rest.startswith(official):
                head[ours + rest[len(official):]] = value
                break
        else:
            raise KeyError(f"{key} has no counterpart in asl's ML-Decoder head")
    return backbone, head

"""Checks models/ml_decoder.py and `export.py --head ml-decoder` against an
independent copy of the official ML-Decoder forward pass.

    python ml_decoder_check.py WORKDIR

1. `OfficialMLDecoder` below follows Alibaba-MIIL/ML_Decoder's code: the
   sequence-first layer, the query embedding, and the group FC as a loop over
   groups. With class counts that do and do not divide into the groups, our
   head, loaded through `remap_official` from TResNet's (`head.decoder.`) and
   ResNet's (`fc.decoder.`) layouts, gives the same logits.
2. A synthesized official checkpoint (a test_resnet backbone plus
   `head.decoder.*` keys with the official names and shapes) exported with
   --weights: the scripted module reproduces the official model's outputs,
   and still does after a save and reload in Python. The card names the head.
3. An official key with no counterpart is refused, naming it.
Prints "ok" or fails with the reason.
"""

import json
import math
import os
import subprocess
import sys

import timm
import torch
from torch import nn
from torch.nn import functional as F

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "models"))
import ml_decoder  # noqa: E402


class OfficialLayer(nn.Module):
    """TransformerDecoderLayerOptimal, sequence-first, as published."""

    def __init__(self, d_model, nhead=8, dim_feedforward=2048, dropout=0.1):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, tgt, memory):
        tgt = tgt + self.dropout1(tgt)
        tgt = self.norm1(tgt)
        tgt2 = self.multihead_attn(tgt, memory, memory)[0]
        tgt = self.norm2(tgt + tgt2)
        tgt2 = self.linear2(F.relu(self.linear1(tgt)))
        return self.norm3(tgt + tgt2)


class OfficialDecoder(nn.Module):
    def __init__(self, num_classes, num_groups, embedding, features):
        super().__init__()
        groups = min(num_groups, num_classes)
        self.embed_standart = nn.Linear(features, embedding)
        self.query_embed = nn.Embedding(groups, embedding)
        self.layers = nn.ModuleList([OfficialLayer(embedding)])
        self.num_classes = num_classes
        self.duplicate_factor = int(num_classes / groups + 0.999)
        self.duplicate_pooling = nn.Parameter(torch.randn(groups, embedding, self.duplicate_factor) * 0.05)
        self.duplicate_pooling_bias = nn.Parameter(torch.randn(num_classes) * 0.05)


class OfficialMLDecoder(nn.Module):
    def __init__(self, num_classes, num_groups=100, embedding=768, features=2048):
        super().__init__()
        self.decoder = OfficialDecoder(num_classes, num_groups, embedding, features)

    def forward(self, x):
        d = self.decoder
        tokens = F.relu(d.embed_standart(x.flatten(2).transpose(1, 2)))
        tgt = d.query_embed.weight.unsqueeze(1).expand(-1, tokens.shape[0], -1)
        h = d.layers[0](tgt, tokens.transpose(0, 1)).transpose(0, 1)
        out = torch.zeros(h.shape[0], h.shape[1], d.duplicate_factor)
        for i in range(h.shape[1]):  # GroupFC
            out[:, i, :] = h[:, i, :] @ d.duplicate_pooling[i, :, :]
        return out.flatten(1)[:, : d.num_classes] + d.duplicate_pooling_bias


class OfficialModel(nn.Module):
    def __init__(self, num_classes, num_groups, embedding):
        super().__init__()
        self.body = timm.create_model("test_resnet", num_classes=0)
        self.head = OfficialMLDecoder(num_classes, num_groups, embedding, self.body.num_features)

    def forward(self, x):
        return self.head(self.body.forward_features(x))


def check_head_against_official():
    # TResNet's head is `head`; ResNet's `fc`.
    for classes, groups, prefix in [(80, 100, "head."), (250, 100, "fc."), (9, 4, "head.")]:
        torch.manual_seed(classes)
        official = OfficialMLDecoder(classes, groups, embedding=64, features=96).eval()
        official_state = {prefix + k: v for k, v in official.state_dict().items()}
        official_state["conv1.weight"] = torch.zeros(1)
        backbone_state, head_state = ml_decoder.remap_official(official_state)
        assert list(backbone_state) == ["conv1.weight"], list(backbone_state)
        ours = ml_decoder.MLDecoderHead(96, classes, groups, embedding=64).eval()
        ours.load_state_dict(head_state, strict=True)
        x = torch.randn(3, 96, 5, 7)
        with torch.no_grad():
            expected, got = official(x), ours(x)
        assert got.shape == (3, classes), got.shape
        diff = (got - expected).abs().max().item()
        assert diff < 1e-5, f"{classes} classes in {groups} groups: differs from the official forward by {diff}"
        scripted = torch.jit.script(ours)
        with torch.no_grad():
            assert torch.equal(scripted(x), got), "scripting changes the head's output"


def check_export_of_official_checkpoint(work):
    torch.manual_seed(7)
    classes = 12
    official = OfficialModel(classes, num_groups=5, embedding=32).eval()
    state = {k.replace("body.", "", 1) if k.startswith("body.") else k: v for k, v in official.state_dict().items()}
    weights = os.path.join(work, "official.pth")
    torch.save({"model": state}, weights)
    out = os.path.join(work, "mld.pt")
    subprocess.run([sys.executable, os.path.join(ROOT, "models", "export.py"), "--model", "test_resnet",
                    "--num-classes", str(classes), "--img-size", "64", "--head", "ml-decoder",
                    "--decoder-embedding", "32", "--num-groups", "5", "--weights", weights, "--out", out],
                   check=True, capture_output=True)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = official(x)
        exported = torch.jit.load(out)
        exported.eval()
        got = exported(x)
        diff = (got - expected).abs().max().item()
        assert diff < 1e-5, f"exported official checkpoint differs by {diff}"
        again = os.path.join(work, "again.pt")
        exported.save(again)
        assert torch.equal(torch.jit.load(again).eval()(x), got), "a Python save and reload changes the outputs"
    card = json.load(open(os.path.join(work, "mld.json")))
    assert card["head"]["kind"] == "ml-decoder" and card["head"]["max_groups"] == 5, card["head"]
    assert all(name.startswith("head.") for name in card["classifier"]) and "head.group_weight" in card["classifier"]
    assert card["mean"] == [0.5, 0.5, 0.5] and card["std"] == [0.5, 0.5, 0.5], (card["mean"], card["std"])
    groups = math.ceil(classes / 5)
    assert tuple(exported.head.group_weight.shape) == (5, 32, groups)

    state["head.decoder.wordvec_proj.weight"] = torch.zeros(1)
    torch.save({"model": state}, weights)
    result = subprocess.run([sys.executable, os.path.join(ROOT, "models", "export.py"), "--model", "test_resnet",
                             "--num-classes", str(classes), "--img-size", "64", "--head", "ml-decoder",
                             "--weights", weights, "--out", out], capture_output=True, text=True)
    assert result.returncode != 0 and "head.decoder.wordvec_proj.weight" in result.stderr, result.stderr


def main():
    check_head_against_official()
    check_export_of_official_checkpoint(sys.argv[1])
    print("ok")


if __name__ == "__main__":
    main()

"""Export a timm classifier to TorchScript for asl to train from Rust.

    asl export --model tresnet_m --num-classes 80 --img-size 224 \
        --out models/tresnet_m.pt [--weights hf-hub:timm/<model>.<tag> | FILE] [--class-names names.txt] \
        [--head ml-decoder [--decoder-embedding 768] [--num-groups 100]]

Writes OUT (a torch.jit.script module with `forward(x) -> logits` and
`forward_features(x) -> feature map`) and OUT with the suffix `.json`, the
model card asl reads: model name, input size, feature count, class count,
the head's parameter names and layout, the input mean and std of timm's
pretrained config and, when known, the class names.

Heads: `linear` is timm's own (global average pooling and a linear layer);
`ml-decoder` replaces both with ML-Decoder (models/ml_decoder.py).

Weights (--weights): timm's hub syntax, `hf-hub:timm/<model>.<tag>`, resolved
into the standard Hugging Face cache (models/hub.py), or a local file: a timm
state dict (.safetensors, .pth/.pt), the ASL model-zoo format {'model':
state_dict, 'num_classes', 'idx_to_class'} whose InPlace-ABN keys are remapped
to timm's BatchNorm layout, or an official ML-Decoder checkpoint, whose head
keys are renamed to ours. Pickled files are read with torch.load(weights_only=
True), which runs no code; a file that needs full unpickling is refused unless
--trust-pickle says its source is trusted. Head tensors whose shape differs
(another class count) are left at their initialisation. Without --weights the
network is randomly initialised. The card records where the weights came
from: hub id, snapshot revision, file and SHA-256.
"""

import argparse
import json
import os
import pickle
import signal
import sys
import tempfile

import timm
import torch

import hub
import ml_decoder


def unpickle(path, trust_pickle):
    """torch.load without running the file's code, unless the user vouches for it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not trust_pickle:
            first_line = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            sys.exit(f"error: {path} needs full unpickling, which can run arbitrary code ({first_line}). "
                     f"If you trust its source, pass --trust-pickle (model.trust_pickle: true in asl train)")
    return torch.load(path, map_location="cpu", weights_only=False)


def load_state_dict(path, trust_pickle=False):
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path), None
    checkpoint = unpickle(path, trust_pickle)
    class_names = None
    if isinstance(checkpoint, dict) and "model" in checkpoint:
        idx_to_class = checkpoint.get("idx_to_class")
        if idx_to_class:
            class_names = [idx_to_class[i] for i in sorted(idx_to_class)]
        checkpoint = checkpoint["model"]
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict):
        sys.exit(f"error: {path} holds a {type(checkpoint).__name__}, not a state dict")
    return checkpoint, class_names


def remap_for_timm(model_name, state_dict, model):
    """ASL model-zoo TResNets use InPlace-ABN; timm's own filter maps them to BatchNorm."""
    if model_name.startswith("tresnet"):
        from timm.models.tresnet import checkpoint_filter_fn

        return checkpoint_filter_fn(state_dict, model)
    return state_dict


def apply_weights(model, model_name, path, trust_pickle=False):
    """Loads `path` into `model` (a timm model, or a backbone WithHead);
    returns the checkpoint's class names when its whole head was loaded."""
    state_dict, class_names = load_state_dict(path, trust_pickle)
    head_state = {}
    if ml_decoder.is_official(state_dict):
        try:
            state_dict, head_state = ml_decoder.remap_official(state_dict)
        except KeyError as e:
            sys.exit(f"error: {path}: {e.args[0]}")
    with_head = isinstance(model, ml_decoder.WithHead)
    backbone = model.backbone if with_head else model
    state_dict = remap_for_timm(model_name, state_dict, backbone)
    head_prefix = backbone.default_cfg.get("classifier", "fc") + "."
    if with_head:
        if any(k.startswith(head_prefix) for k in state_dict):
            print(f"{path}: its linear classifier does not fit the ML-Decoder head: left out", file=sys.stderr)
        state_dict = {"backbone." + k: v for k, v in state_dict.items() if not k.startswith(head_prefix)}
        state_dict.update({"head." + k: v for k, v in head_state.items()})
        head_prefix = "head."
    elif head_state:
        sys.exit(f"error: {path} holds an ML-Decoder head; export it with --head ml-decoder")
    own = model.state_dict()
    for key in [k for k in state_dict if k.startswith(head_prefix)]:
        if key in own and state_dict[key].shape != own[key].shape:
            print(f"head {key} has shape {tuple(state_dict[key].shape)}, "
                  f"not {tuple(own[key].shape)}: left at its initialisation", file=sys.stderr)
            del state_dict[key]
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    head_missing = [k for k in missing if k.startswith(head_prefix)]
    missing = [k for k in missing if not k.startswith(head_prefix)]
    if missing or unexpected:
        sys.exit(f"error: {path} does not fit {model_name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return None if head_missing else class_names


def buffers_to_parameters(model):
    """Re-registers every buffer (BatchNorm running statistics, blur filters)
    as a parameter with requires_grad=False.

    tch reaches a TorchScript module's state only through named_parameters,
    and asl's EMA must average the BatchNorm statistics too. The forward
    pass, state_dict keys and Python loading are unchanged; the optimizer in
    asl skips tensors that do not require grad. Returns the names moved.
    """
    moved = []
    for module_name, module in model.named_modules():
        for name in list(module._buffers):
            tensor = module._buffers.pop(name)
            if tensor is None:
                continue
            module.register_parameter(name, torch.nn.Parameter(tensor, requires_grad=False))
            moved.append(f"{module_name}.{name}" if module_name else name)
    return moved


def resolve_weights(args):
    """The local weight file, the timm name whose pretrained config describes it (`tresnet_l.miil_in1k_448`,
    or the bare model name), that config when it comes from the hub repo rather than timm, and the card's
    record of the weights' origin."""
    if not args.weights:
        return None, args.model, None, None
    if not hub.is_reference(args.weights):
        if not os.path.isfile(args.weights):
            sys.exit(f"error: --weights {args.weights}: no such file")
        return args.weights, args.model, None, {"file": os.path.abspath(args.weights), "sha256": hub.sha256_of(args.weights)}
    try:
        repo_id, _ = hub.split(args.weights)
        tag = hub.timm_tag(repo_id)
        if tag and tag.split(".")[0] != args.model:
            raise hub.HubError(f"{args.weights} holds {tag.split('.')[0]} weights, not {args.model}")
        known = tag in timm.list_pretrained()
        resolved = hub.resolve(args.weights, read_config=not known)
    except hub.HubError as e:
        sys.exit(f"error: {e}")
    if resolved.architecture and resolved.architecture != args.model:
        sys.exit(f"error: {args.weights} holds {resolved.architecture} weights, not {args.model}")
    if not known and resolved.pretrained_cfg is None:
        print(f"note: timm does not know {args.weights} and its repo has no config.json: "
              f"mean/std are {args.model}'s defaults", file=sys.stderr)
    name = tag if known else args.model
    origin = {"hub_id": resolved.repo_id, "revision": resolved.revision, "file": resolved.file,
              "sha256": resolved.sha256, "source": args.weights}
    return resolved.path, name, resolved.pretrained_cfg, origin


def build(args, name, pretrained_cfg):
    """The timm model, or its backbone (classifier removed) WithHead ML-Decoder. `name` may carry a pretrained
    tag, whose config (mean, std, input size) the model then reports."""
    options = {"pretrained_cfg": pretrained_cfg} if pretrained_cfg else {}
    if args.head == "linear":
        return timm.create_model(name, pretrained=False, num_classes=args.num_classes, **options)
    backbone = timm.create_model(name, pretrained=False, num_classes=0, **options)
    head = ml_decoder.MLDecoderHead(backbone.num_features, args.num_classes, args.num_groups, args.decoder_embedding)
    return ml_decoder.WithHead(backbone, head)


def head_layout(args, head_names):
    """What asl needs to give the head a new class count."""
    if args.head == "linear":
        return {"kind": "linear", "weight": head_names[0], "bias": head_names[1] if len(head_names) > 1 else None}
    return {"kind": "ml-decoder", "queries": "head.queries", "group_weight": "head.group_weight",
            "group_bias": "head.group_bias", "max_groups": args.num_groups}


def parse_args():
    parser = argparse.ArgumentParser(prog=os.environ.get("ASL_EXPORT_PROG"), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="timm model name, e.g. tresnet_m, tresnet_l, test_resnet")
    parser.add_argument("--num-classes", type=int, required=True)
    parser.add_argument("--img-size", type=int, default=224, help="square input size S (TResNet: a multiple of 32)")
    parser.add_argument("--weights", help="hf-hub:<org>/<name>[@<revision>] (e.g. hf-hub:timm/tresnet_l.miil_in1k_448), "
                        "or a local timm, ASL model-zoo or ML-Decoder checkpoint")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow a --weights file that needs full unpickling (it can run code: trusted files only)")
    parser.add_argument("--no-progress", action="store_true", help="hide the download progress bar")
    parser.add_argument("--class-names", help="text file with one class name per line")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")
    parser.add_argument("--head", choices=["linear", "ml-decoder"], default="linear",
                        help="timm's pooling and linear classifier, or ML-Decoder")
    parser.add_argument("--decoder-embedding", type=int, default=768, help="ML-Decoder's embedding size D")
    parser.add_argument("--num-groups", type=int, default=100,
                        help="ML-Decoder's query count K (at most the class count)")
    parser.add_argument("--out", required=True, help="output TorchScript file (.pt)")
    return parser.parse_args()


def stop_on_sigterm():
    """SIGTERM, asl asking the export to stop, ends it as an exception, so that the files it was writing
    (the model's temporary file, a hub download it began) are removed on the way out."""

    def stop(signum, frame):
        raise SystemExit(f"error: stopped by signal {signum}")

    signal.signal(signal.SIGTERM, stop)


def write_atomically(path, suffix, write):
    """`write(tmp)` into a temporary file beside `path`, then renamed over it: a crash never leaves half a
    file under the real name, and an interruption removes the temporary one."""
    tmp = tempfile.NamedTemporaryFile(dir=os.path.dirname(os.path.abspath(path)), suffix=suffix, delete=False)
    tmp.close()
    try:
        write(tmp.name)
        os.replace(tmp.name, path)
    except BaseException:
        if os.path.exists(tmp.name):
            os.remove(tmp.name)
        raise


def main():
    stop_on_sigterm()
    args = parse_args()
    if args.model.startswith("tresnet") and args.img_size % 32:
        sys.exit(f"error: --img-size {args.img_size}: TResNet needs a multiple of 32")
    if args.decoder_embedding < 1 or args.num_groups < 1 or args.decoder_embedding % ml_decoder.HEADS:
        sys.exit(f"error: --decoder-embedding must be a positive multiple of {ml_decoder.HEADS} "
                 f"and --num-groups positive, got {args.decoder_embedding} and {args.num_groups}")
    if args.no_progress:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    weights, name, pretrained_cfg, origin = resolve_weights(args)
    torch.manual_seed(args.seed)
    model = build(args, name, pretrained_cfg)
    backbone = model.backbone if args.head == "ml-decoder" else model
    class_names = None
    if weights:
        class_names = apply_weights(model, args.model, weights, args.trust_pickle)
        if class_names is not None and len(class_names) != args.num_classes:
            class_names = None
    else:
        print(f"note: no --weights given: {args.model} is randomly initialised (seed {args.seed})", file=sys.stderr)
    if args.class_names:
        with open(args.class_names) as f:
            class_names = [line.strip() for line in f if line.strip()]
        if len(class_names) != args.num_classes:
            sys.exit(f"error: {args.class_names} lists {len(class_names)} names for {args.num_classes} classes")
    model.eval()
    example = torch.rand(2, 3, args.img_size, args.img_size)
    with torch.no_grad():
        eager_out = model(example)
    state_names = buffers_to_parameters(model)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        scripted_out = scripted(example)
        features = scripted.forward_features(example)
    difference = (eager_out - scripted_out).abs().max().item()
    if difference > 1e-5:
        sys.exit(f"error: scripted output differs from eager timm by {difference}")

    head_prefix = "head." if args.head == "ml-decoder" else backbone.default_cfg.get("classifier", "fc") + "."
    head_names = [name for name, _ in model.named_parameters() if name.startswith(head_prefix)]
    card = {
        "model": args.model,
        "input_size": args.img_size,
        "fixed_input_size": bool(backbone.pretrained_cfg.get("fixed_input_size", False)),
        "num_features": int(backbone.num_features),
        "num_classes": args.num_classes,
        "classifier": head_names,
        "head": head_layout(args, head_names),
        "mean": list(backbone.pretrained_cfg.get("mean") or []) or None,
        "std": list(backbone.pretrained_cfg.get("std") or []) or None,
        "class_names": class_names,
        "feature_shape": list(features.shape[1:]),
        "state_as_parameters": state_names,
        "pretrained": bool(args.weights),
        "weights": origin and {**origin, "pretrained_input_size": list(backbone.pretrained_cfg.get("input_size") or [])},
        "torch": torch.__version__,
        "timm": timm.__version__,
    }
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    write_atomically(args.out, ".pt.tmp", scripted.save)
    card_path = os.path.splitext(args.out)[0] + ".json"

    def write_card(tmp):
        with open(tmp, "w") as f:
            json.dump(card, f, indent=2)

    write_atomically(card_path, ".json.tmp", write_card)
    print(f"exported {args.model} with the {args.head} head ({args.num_classes} classes, {args.img_size}px) to {args.out}; "
          f"scripted vs eager max |diff| {difference:.2e}; card {card_path}")


if __name__ == "__main__":
    main()

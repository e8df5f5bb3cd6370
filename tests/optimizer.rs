//! The fused optimizer against PyTorch's own single-tensor Adam and AdamW
//! (the reference implementation), over 10 steps with a one-cycle-like
//! learning rate and β1, coupled or decoupled weight decay on one group
//! and none on the other, and the head at its own learning rate (a third
//! PyTorch param group); and a resumed optimizer continuing bit for bit.

mod common;

use asl::model::{NamedParameter, ParamGroup};
use asl::train::{Adam, OptimizerConfig, OptimizerKind, StepHyper};
use common::python::run_python;
use common::uniform;
use tch::{Kind, Tensor};

/// Name, shape, decay group, and whether it is part of the head.
const SHAPES: [(&str, &[i64], ParamGroup, bool); 3] = [
    ("conv.weight", &[4, 3, 3, 3], ParamGroup::Decay, false),
    ("conv.bias", &[4], ParamGroup::NoDecay, false),
    ("fc.weight", &[5, 7], ParamGroup::Decay, true),
];
const HEAD_LR_SCALE: f64 = 3.0;
const STEPS: usize = 10;

fn initial(i: usize) -> Vec<f64> {
    let n = SHAPES[i].1.iter().product::<i64>() as usize;
    uniform(n, -1.0, 1.0, 10 + i as u64)
}

fn gradient(step: usize, i: usize) -> Vec<f64> {
    let n = SHAPES[i].1.iter().product::<i64>() as usize;
    uniform(n, -0.5, 0.5, 1000 + 10 * step as u64 + i as u64)
}

fn hyper(step: usize) -> StepHyper {
    StepHyper { lr: 1e-2 * (1.0 + step as f64) / 3.0, beta1: 0.95 - 0.01 * step as f64 }
}

fn parameters(values: &[Vec<f64>]) -> Vec<NamedParameter> {
    SHAPES
        .iter()
        .zip(values)
        .map(|((name, shape, group, in_head), v)| NamedParameter {
            name: name.to_string(),
            tensor: Tensor::from_slice(v).to_kind(Kind::Float).view(*shape).set_requires_grad(true),
            group: *group,
            in_head: *in_head,
        })
        .collect()
}

/// Steps `from..to` of the sequence: gradients set through autograd.
fn run(adam: &mut Adam, params: &[Tensor], from: usize, to: usize) {
    for step in from..to {
        adam.zero_grad().unwrap();
        let loss: Tensor = params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (p * Tensor::from_slice(&gradient(step, i)).to_kind(Kind::Float).view(SHAPES[i].1)).sum(Kind::Float)
            })
            .reduce(|a, b| a + b)
            .unwrap();
        loss.backward();
        adam.step(hyper(step), None).unwrap();
    }
}

fn values(params: &[Tensor]) -> Vec<Vec<f64>> {
    params.iter().map(|p| Vec::<f64>::try_from(p.to_kind(Kind::Double).view([-1])).unwrap()).collect()
}

fn pytorch(kind: OptimizerKind, weight_decay: f64) -> Vec<Vec<f64>> {
    let init: Vec<Vec<f64>> = (0..3).map(initial).collect();
    let grads: Vec<Vec<Vec<f64>>> = (0..STEPS).map(|s| (0..3).map(|i| gradient(s, i)).collect()).collect();
    let hypers: Vec<[f64; 2]> = (0..STEPS).map(|s| [hyper(s).lr, hyper(s).beta1]).collect();
    let shapes: Vec<&[i64]> = SHAPES.iter().map(|s| s.1).collect();
    let script = format!(
        "import json, torch\n\
         init, grads, hypers, shapes = {init}, {grads}, {hypers}, {shapes}\n\
         ps = [torch.tensor(v, dtype=torch.float32).view(s).requires_grad_() for v, s in zip(init, shapes)]\n\
         groups = [{{'params': [ps[0]], 'weight_decay': {wd}, 'scale': 1.0}}, {{'params': [ps[1]], 'weight_decay': 0.0, 'scale': 1.0}},\n\
         \x20         {{'params': [ps[2]], 'weight_decay': {wd}, 'scale': {scale}}}]\n\
         opt = (torch.optim.AdamW if '{kind}' == 'adamw' else torch.optim.Adam)(groups, betas=(0.9, 0.999), eps=1e-8, foreach=False)\n\
         for step in range(len(grads)):\n\
         \x20   for g in opt.param_groups:\n\
         \x20       g['lr'] = hypers[step][0] * g['scale']; g['betas'] = (hypers[step][1], 0.999)\n\
         \x20   for p, grad, s in zip(ps, grads[step], shapes):\n\
         \x20       p.grad = torch.tensor(grad, dtype=torch.float32).view(s)\n\
         \x20   opt.step()\n\
         print(json.dumps([p.detach().double().view(-1).tolist() for p in ps]))",
        init = serde_json::to_string(&init).unwrap(),
        grads = serde_json::to_string(&grads).unwrap(),
        hypers = serde_json::to_string(&hypers).unwrap(),
        shapes = serde_json::to_string(&shapes).unwrap(),
        wd = weight_decay,
        scale = HEAD_LR_SCALE,
        kind = if kind == OptimizerKind::AdamW { "adamw" } else { "adam" },
    );
    serde_json::from_str(run_python(&["-c", &script]).trim()).unwrap()
}

#[test]
fn fused_steps_match_pytorch_adam_and_adamw() {
    for kind in [OptimizerKind::Adam, OptimizerKind::AdamW] {
        let weight_decay = 0.1;
        let config = OptimizerConfig { kind, weight_decay, head_lr_scale: HEAD_LR_SCALE, ..OptimizerConfig::default() };
        let params = parameters(&(0..3).map(initial).collect::<Vec<_>>());
        let tensors: Vec<Tensor> = params.iter().map(|p| p.tensor.shallow_clone()).collect();
        let mut adam = Adam::new(params, config).unwrap();
        run(&mut adam, &tensors, 0, STEPS);
        let reference = pytorch(kind, weight_decay);
        let worst = values(&tensors)
            .iter()
            .flatten()
            .zip(reference.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-6, "{kind:?}: fused and PyTorch's Adam differ by {worst}");
        assert!(values(&tensors)[0] != initial(0), "{kind:?}: the parameters must have moved");
    }
}

#[test]
fn a_resumed_optimizer_continues_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let config = OptimizerConfig { weight_decay: 0.1, ..OptimizerConfig::default() };
    let whole = parameters(&(0..3).map(initial).collect::<Vec<_>>());
    let whole_tensors: Vec<Tensor> = whole.iter().map(|p| p.tensor.shallow_clone()).collect();
    let mut uninterrupted = Adam::new(whole, config).unwrap();
    run(&mut uninterrupted, &whole_tensors, 0, STEPS);

    let first = parameters(&(0..3).map(initial).collect::<Vec<_>>());
    let first_tensors: Vec<Tensor> = first.iter().map(|p| p.tensor.shallow_clone()).collect();
    let mut before = Adam::new(first, config).unwrap();
    run(&mut before, &first_tensors, 0, STEPS / 2);
    before.save(&dir.path().join("optimizer.ot")).unwrap();
    // A new process: the parameters as a checkpoint holds them, fresh optimizer, saved state.
    let halfway = parameters(&values(&first_tensors));
    let halfway_tensors: Vec<Tensor> = halfway.iter().map(|p| p.tensor.shallow_clone()).collect();
    let mut after = Adam::new(halfway, config).unwrap();
    after.load(&dir.path().join("optimizer.ot"), tch::Device::Cpu).unwrap();
    assert_eq!(after.steps_taken().unwrap(), (STEPS / 2) as u64);
    run(&mut after, &halfway_tensors, STEPS / 2, STEPS);
    for (a, b) in whole_tensors.iter().zip(&halfway_tensors) {
        assert!(a.equal(b), "a resumed optimizer drifted");
    }
}

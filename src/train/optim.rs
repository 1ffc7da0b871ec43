//! AdamW (Loshchilov & Hutter) with named, saveable moments, so a checkpoint resumes exactly.
//! candle-nn's `AdamW` keeps its moments private; the update below is the same (decoupled weight decay,
//! bias-corrected moments).
use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{backprop::GradStore, Tensor, Var};
use serde::{Deserialize, Serialize};

/// AdamW hyper-parameters; the defaults are the paper's (lr 5e-5, weight decay 0.01).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { lr: 5e-5, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

struct Slot {
    name: String,
    var: Var,
    m: Var,
    v: Var,
}

pub struct AdamW {
    slots: Vec<Slot>,
    step: usize,
    pub cfg: AdamWConfig,
}

impl AdamW {
    /// `vars`: (name, variable) pairs, e.g. from `VarMap::data()`; sorted by name for a stable order.
    pub fn new(mut vars: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                let m = Var::zeros(var.shape(), var.dtype(), var.device())?;
                let v = Var::zeros(var.shape(), var.dtype(), var.device())?;
                Ok(Slot { name, var, m, v })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { slots, step: 0, cfg })
    }

    pub fn steps_taken(&self) -> usize {
        self.step
    }

    /// One update with learning rate `lr` (a schedule may vary it). Variables without a gradient are left
    /// untouched (their weight decay too, as in candle-nn and PyTorch).
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let c = self.cfg;
        let scale_m = 1.0 / (1.0 - c.beta1.powi(self.step as i32));
        let scale_v = 1.0 / (1.0 - c.beta2.powi(self.step as i32));
        for s in &self.slots {
            let Some(g) = grads.get(s.var.as_tensor()) else { continue };
            let m = ((s.m.as_tensor() * c.beta1)? + (g * (1.0 - c.beta1))?)?;
            let v = ((s.v.as_tensor() * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let update = ((&m * scale_m)? / ((&v * scale_v)?.sqrt()? + c.eps)?)?;
            let theta = ((s.var.as_tensor() * (1.0 - lr * c.weight_decay))? - (update * lr)?)?;
            s.m.set(&m)?;
            s.v.set(&v)?;
            s.var.set(&theta)?;
        }
        Ok(())
    }

    /// Writes the moments and the step count to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut t: HashMap<String, Tensor> = HashMap::new();
        for s in &self.slots {
            t.insert(format!("m.{}", s.name), s.m.as_tensor().clone());
            t.insert(format!("v.{}", s.name), s.v.as_tensor().clone());
        }
        t.insert("step".into(), Tensor::new(&[self.step as u32], &candle_core::Device::Cpu)?);
        candle_core::safetensors::save(&t, path).with_context(|| format!("writing optimizer state {}", path.display()))
    }

    /// Restores what [`AdamW::save`] wrote; every variable must have its moments.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let dev = self.slots.first().map(|s| s.var.device().clone()).unwrap_or(candle_core::Device::Cpu);
        let t = candle_core::safetensors::load(path, &dev)
            .with_context(|| format!("reading optimizer state {}", path.display()))?;
        for s in &self.slots {
            let get = |k: String| t.get(&k).cloned().with_context(|| format!("optimizer state lacks {k}"));
            s.m.set(&get(format!("m.{}", s.name))?)?;
            s.v.set(&get(format!("v.{}", s.name))?)?;
        }
        self.step = t.get("step").context("optimizer state lacks step")?.to_vec1::<u32>()?[0] as usize;
        Ok(())
    }
}

//! The instruction set the hand-vectorised CPU kernels run with on this CPU, chosen once at run time.
//!
//! The binary is built for baseline x86-64 so that it runs anywhere; each kernel that matters for speed
//! is also compiled with `#[target_feature]` for AVX-512 and for AVX2 + FMA, and calls the widest one
//! [`Isa::get`] allows. `tests/it/avx2_only.rs` runs the binary on an emulated AVX2-only CPU.

/// The widest instruction set a kernel may use here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F, with AVX2 and FMA (every AVX-512 CPU has both).
    Avx512,
    /// AVX2 and FMA.
    Avx2,
    /// Baseline x86-64 (SSE2), or another architecture.
    Plain,
}

impl Isa {
    /// This CPU's. `is_x86_feature_detected!` caches its answer, so this is cheap to call per task.
    pub fn get() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
            if avx2 && std::is_x86_feature_detected!("avx512f") {
                return Self::Avx512;
            }
            if avx2 {
                return Self::Avx2;
            }
        }
        Self::Plain
    }

    /// Whether this CPU can run code compiled for `self`.
    pub fn runs_here(self) -> bool {
        match self {
            Self::Avx512 => Self::get() == Self::Avx512,
            Self::Avx2 => Self::get().has_avx2(),
            Self::Plain => true,
        }
    }

    /// Every instruction set this CPU can run, widest first: tests compare each kernel's versions.
    pub fn available() -> Vec<Self> {
        [Self::Avx512, Self::Avx2, Self::Plain].into_iter().filter(|isa| isa.runs_here()).collect()
    }

    /// Whether AVX2 and FMA may be used (AVX-512 CPUs included).
    pub fn has_avx2(self) -> bool {
        self != Self::Plain
    }
}

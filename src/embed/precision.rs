//! Which arithmetic the packed CPU encoder runs, decided once at load from what the CPU has.
//!
//! `embed.precision = auto` picks int8 where the CPU has int8 dot-product instructions (AVX2's
//! `vpmaddubsw`, AVX-512 VNNI's `vpdpbusd`) and fp32 elsewhere. `embed.cpu_features_off` (a
//! comma-separated list such as `avx2,avx512vnni`; `SIGNALDESK_EMBED__CPU_FEATURES_OFF` in the
//! environment) hides features from this decision, so the fp32 fallback can be exercised on any
//! machine.

use crate::config::EmbedPrecision;

use super::EmbedError;

/// The setting that masks CPU features from the precision decision.
pub const FEATURES_OFF_SETTING: &str = "embed.cpu_features_off";

/// The precision a loaded encoder runs at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// 32-bit floats throughout.
    Fp32,
    /// int8 linear layers (see `int8`).
    Int8,
}

impl Precision {
    /// The name used in configuration, reports and cache keys.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Int8 => "int8",
        }
    }
}

/// The CPU features the precision decision looks at, after the mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuFeatures {
    pub avx2: bool,
    pub fma: bool,
    pub avx512f: bool,
    pub avx512vnni: bool,
    pub avx512bf16: bool,
    pub amx_int8: bool,
}

impl CpuFeatures {
    /// What this CPU has (apply `embed.cpu_features_off` with [`CpuFeatures::masked`]).
    #[cfg(target_arch = "x86_64")]
    pub fn detect() -> Self {
        Self {
            avx2: std::arch::is_x86_feature_detected!("avx2"),
            fma: std::arch::is_x86_feature_detected!("fma"),
            avx512f: std::arch::is_x86_feature_detected!("avx512f"),
            avx512vnni: std::arch::is_x86_feature_detected!("avx512vnni"),
            avx512bf16: std::arch::is_x86_feature_detected!("avx512bf16"),
            amx_int8: amx_int8_in_cpuid(),
        }
    }

    /// What this CPU has: none of the x86 features.
    #[cfg(not(target_arch = "x86_64"))]
    pub fn detect() -> Self {
        Self {
            avx2: false,
            fma: false,
            avx512f: false,
            avx512vnni: false,
            avx512bf16: false,
            amx_int8: false,
        }
    }

    /// These features with the comma-separated names in `off` turned off (unknown names are
    /// ignored: the mask can only take features away).
    pub fn masked(mut self, off: &str) -> Self {
        for name in off.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name.to_ascii_lowercase().as_str() {
                "avx2" => self.avx2 = false,
                "fma" => self.fma = false,
                "avx512f" | "avx512" => self.avx512f = false,
                "avx512vnni" | "vnni" => self.avx512vnni = false,
                "avx512bf16" | "bf16" => self.avx512bf16 = false,
                "amx-int8" | "amx_int8" | "amx" => self.amx_int8 = false,
                _ => {}
            }
        }
        self
    }

    /// Whether the int8 kernels have a SIMD implementation here (AVX2 or AVX-512 VNNI); without
    /// one they fall back to scalar code that is slower than fp32.
    pub fn has_int8_dot(&self) -> bool {
        self.avx2 || (self.avx512f && self.avx512vnni)
    }

    /// The features that are on, by name, for reports.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.avx2, "avx2"),
            (self.fma, "fma"),
            (self.avx512f, "avx512f"),
            (self.avx512vnni, "avx512vnni"),
            (self.avx512bf16, "avx512bf16"),
            (self.amx_int8, "amx-int8"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// AMX-INT8 as CPUID reports it (leaf 7, EDX bit 25); `is_x86_feature_detected!("amx-int8")` is
/// not stable Rust yet. Reported only: no kernel here uses AMX tiles.
#[cfg(target_arch = "x86_64")]
fn amx_int8_in_cpuid() -> bool {
    // SAFETY: CPUID exists on every x86_64 CPU; leaf 7 reads as zeros where it is not defined.
    #[allow(unused_unsafe)]
    let leaf7 = unsafe { std::arch::x86_64::__cpuid_count(7, 0) };
    leaf7.edx & (1 << 25) != 0
}

/// The precision to run for `requested` on a CPU with `cpu`: `auto` takes int8 where it has
/// SIMD kernels and fp32 elsewhere; an explicit `int8` without them is an error that says why,
/// rather than a silent slowdown.
pub fn resolve(requested: EmbedPrecision, cpu: &CpuFeatures) -> Result<Precision, EmbedError> {
    match requested {
        EmbedPrecision::Fp32 => Ok(Precision::Fp32),
        EmbedPrecision::Auto if cpu.has_int8_dot() => Ok(Precision::Int8),
        EmbedPrecision::Auto => Ok(Precision::Fp32),
        EmbedPrecision::Int8 if cpu.has_int8_dot() => Ok(Precision::Int8),
        EmbedPrecision::Int8 => Err(EmbedError::Unsupported(format!(
            "embed.precision = int8 needs AVX2 or AVX-512 VNNI, and this CPU has neither \
             (features on: {:?}; {FEATURES_OFF_SETTING} masks some); use fp32 or auto",
            cpu.names()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_on() -> CpuFeatures {
        CpuFeatures {
            avx2: true,
            fma: true,
            avx512f: true,
            avx512vnni: true,
            avx512bf16: true,
            amx_int8: true,
        }
    }

    #[test]
    fn auto_takes_int8_only_with_int8_dot_products() {
        let cpu = all_on();
        assert_eq!(
            resolve(EmbedPrecision::Auto, &cpu).unwrap(),
            Precision::Int8
        );
        let no_vnni = cpu.masked("avx512vnni");
        assert_eq!(
            resolve(EmbedPrecision::Auto, &no_vnni).unwrap(),
            Precision::Int8
        );
        let neither = cpu.masked("avx2, AVX512VNNI");
        assert!(!neither.has_int8_dot());
        assert_eq!(
            resolve(EmbedPrecision::Auto, &neither).unwrap(),
            Precision::Fp32
        );
        assert_eq!(
            resolve(EmbedPrecision::Fp32, &cpu).unwrap(),
            Precision::Fp32
        );
    }

    #[test]
    fn explicit_int8_without_kernels_is_an_error_naming_the_setting() {
        let neither = all_on().masked("avx2,vnni");
        let err = resolve(EmbedPrecision::Int8, &neither)
            .unwrap_err()
            .to_string();
        assert!(err.contains("embed.precision = int8"), "{err}");
        assert!(err.contains(FEATURES_OFF_SETTING), "{err}");
    }

    #[test]
    fn the_mask_only_takes_features_away() {
        let cpu = all_on().masked("nonsense,,fma");
        assert!(!cpu.fma && cpu.avx2 && cpu.avx512vnni);
        assert_eq!(cpu.names().len(), 5);
    }
}

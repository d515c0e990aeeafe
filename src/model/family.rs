//! One network per variant of `model.variant`.

use candle_core::Result;
use candle_nn::VarBuilder;

use super::config::Variant;
use super::conv::Conv;
use super::dense::{Basic, Deep, Denoising, Sparse};
use super::net::{Architecture, Autoencoder};
use super::vae::Vae;

/// The untrained network `arch` describes.
pub fn build(arch: &Architecture, vb: VarBuilder) -> Result<Box<dyn Autoencoder>> {
    let m = &arch.model;
    let features = arch.features();
    Ok(match m.variant {
        Variant::Basic => Box::new(Basic::new(features, m.latent, vb)?),
        Variant::Deep => Box::new(Deep::new(features, &m.hidden, m.latent, m.activation, vb)?),
        Variant::Denoising => Box::new(Denoising {
            inner: Deep::new(features, &m.hidden, m.latent, m.activation, vb)?,
            noise: m.denoising.noise,
            sigma: m.denoising.sigma,
            mask_fraction: m.denoising.mask_fraction,
        }),
        Variant::Sparse => Box::new(Sparse::new(features, arch.latent_dim(), &m.sparse, vb)?),
        Variant::Vae => Box::new(Vae::new(
            features,
            &m.hidden,
            m.latent,
            m.activation,
            &m.vae,
            vb,
        )?),
        Variant::Conv => Box::new(Conv::new(arch, vb)?),
    })
}

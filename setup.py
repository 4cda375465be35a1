"""FactorPortrait-JAX: controllable portrait animation in JAX/Flax."""
from setuptools import find_packages, setup

# Pinned to one co-installable set (tensorflow-cpu, apache-beam and jax agree on protobuf 6).
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "grain==0.2.18",
    "tensorflow-datasets==4.9.10",
    "array-record==0.8.6",
    "apache-beam==2.77.0",
    "ml-collections==1.1.0",
    "numpy==2.4.6",
    "scipy==1.17.1",
    "clu==0.0.12",
    "tensorflow-cpu==2.21.0",
    "tensorboard==2.21.0",
    "absl-py==2.5.1",
    "embreex==4.4.0.post1",
    "threadpoolctl==3.6.0",  # one BLAS thread while several frames render at once
    "imageio==2.38.1",
    "imageio-ffmpeg==0.8.1",
    "pillow==12.3.0",
    "tqdm==4.70.1",
    "importlib_resources==7.1.0",  # TFDS needs it to build datasets
    "safetensors==0.8.0",  # reading diffusers checkpoints needs no torch
    "dm-pix==0.4.5",  # image metrics (PSNR, SSIM) for fp-eval
]

EXTRAS_REQUIRE = {
    "test": ["pytest==9.2.0", "pytest-xdist==3.8.0"],
    # torch is pinned to the CPU build; diffusers is pinned so it never pulls another torch.
    "torch": ["torch==2.13.0", "diffusers==0.42.1"],
    "tpu": ["jax[tpu]==0.10.2"],
}

setup(
    name="factorportrait-jax",
    version="0.1.0",
    description="Controllable portrait animation (expression, head pose, camera) in JAX/Flax.",
    python_requires=">=3.11",
    packages=find_packages(include=["fp_jax", "fp_jax.*", "data_pipeline", "data_pipeline.*", "configs", "configs.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={
        "console_scripts": [
            "fp-data=data_pipeline.build_cli:run",
            "fp-preview=data_pipeline.preview_cli:run",
            "fp-train=fp_jax.train.cli:run",
            "fp-cache-latents=fp_jax.train.cache_latents:run",
            "fp-export=fp_jax.export.cli:run_export",
            "fp-import=fp_jax.export.cli:run_import",
            "fp-aot=fp_jax.aot.cli:run",
            "fp-sample=fp_jax.sample.cli:run",
            "fp-eval=fp_jax.eval.cli:run",
        ],
    },
)

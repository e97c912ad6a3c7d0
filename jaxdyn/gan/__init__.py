"""Generative adversarial populations: the mode-collapse metrics of the 2D mixture benchmarks.

(The GAN task itself, generator and discriminator as one member, is being built
in the GAN issue; these metrics stand on their own and work on any samples.)
"""

from jaxdyn.gan.metrics import mode_metrics

__all__ = ["mode_metrics"]

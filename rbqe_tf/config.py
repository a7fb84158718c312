"""Network configuration and named variants."""
import dataclasses


@dataclasses.dataclass(frozen=True)
class RBQEConfig:
    """Hyper-parameters of the multi-exit nested U-Net (docs/method.md, "Network").

    ``num_levels`` resolution levels give ``num_levels - 1`` exits. With
    ``eca_last_step=False`` the last step skips ECA on its lower inputs and its
    head, as the paper's code does (300,455 parameters for ``rbqe``).
    """

    channels: int = 1
    features: int = 32
    num_levels: int = 6
    separable_decoder: bool = True
    eca: bool = True
    eca_last_step: bool = False

    def __post_init__(self):
        if self.num_levels < 2:
            raise ValueError(f"num_levels must be >= 2, got {self.num_levels}")
        if self.features < 1 or self.channels < 1:
            raise ValueError("features and channels must be positive")

    @property
    def num_exits(self):
        return self.num_levels - 1

    @property
    def size_multiple(self):
        """Input height and width must be multiples of this."""
        return 2 ** (self.num_levels - 1)

    def to_dict(self):
        return dataclasses.asdict(self)


VARIANTS = {
    "rbqe": RBQEConfig(),
    "tiny": RBQEConfig(features=4),
}


def get_config(variant="rbqe", **overrides):
    """Returns the named variant's config with ``overrides`` applied."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} (expected one of {', '.join(VARIANTS)})")
    return dataclasses.replace(VARIANTS[variant], **overrides)

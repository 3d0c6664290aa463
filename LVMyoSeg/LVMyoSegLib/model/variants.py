"""The paper's three network variants by name, without Keras (the Slicer modules list them too)."""

VARIANTS: tuple[str, ...] = ("cnn", "one_level", "multi_level")  # the paper's order: the CNN alone, then the RNNs
VARIANT_TITLES = {"cnn": "CNN", "one_level": "One-level ConvLSTM", "multi_level": "Multi-level ConvLSTM"}


def check_variant(variant: str) -> None:
    """Raise ``ValueError`` unless ``variant`` is one of :data:`VARIANTS`."""
    if variant not in VARIANTS:
        raise ValueError(f"Unknown network variant {variant!r}; choose one of {', '.join(VARIANTS)}.")

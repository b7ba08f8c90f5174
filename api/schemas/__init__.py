"""Response and request schemas, split by direction (`...Create` in, `...Public` out)."""

"""The fleet: device records (model, variant, region, tags, pin, public key)."""

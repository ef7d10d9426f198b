"""Card profiles used by the tests only: they prove the engine is not one card's."""

"""What pinloop knows about a kind of card, kept out of the generic engine.

Today one card: the Japanese My Number card (:mod:`harness.cards.jpki`).
"""

"""Pure domain: ids, elements, events, piles, progressions, mail and record types. No I/O."""

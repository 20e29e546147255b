"""Tiers `naive` (textbook loops) and `reference` (vectorized torch), written from
scratch: no torch.nn / torch.nn.functional call for the op itself. One file per op
family; each defines `<op>_naive` and `<op>_reference` side by side."""

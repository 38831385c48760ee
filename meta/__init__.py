"""Learning a masking policy: direct supervision and bilevel meta-gradients (to come)."""

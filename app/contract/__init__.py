"""What two sides of Strata agree on over the wire; imported downward by both of them."""

"""Watch lists (seed 002, 10.2-10.11): policies, items and tasks owned by the box, matched against new targets."""

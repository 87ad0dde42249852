"""Cases of the bad-input matrix (tests/test_bad_input_matrix.py), one module per area."""

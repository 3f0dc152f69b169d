"""The HTTP driver: the Flask application factory, its errors and auth, one blueprint module per area."""

"""Tests written once with async/await; tests/_sync is generated from them."""

"""One package per framework, each exposing the same protocol from files with the same names."""

"""Command-line entry points: argparse only, the logic lives in pyxv."""

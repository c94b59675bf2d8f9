"""Command-line tools for trained ACN models: `acn-predict` (batch tagging) and `acn-explain` (attention pictures)."""

"""Small asyncio helpers for long-running loops and stepwise state changes; imports
nothing from the project, so every layer may use them."""

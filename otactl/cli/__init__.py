"""The command-line interface: parse, call one service function, render. No business rules here."""

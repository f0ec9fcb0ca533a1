"""Log files: the JSON Lines writer, the streaming reader, the records they share, the exports."""

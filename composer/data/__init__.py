"""Data for the `text` task: reading text from local files or the Hugging Face hub (text_source.py) and the
tokenizers that turn it into ids (tokenizer.py). `sample.txt` is the shipped English sample."""

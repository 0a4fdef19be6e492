"""The Hub layer: publishing a run's model and a collection (real Hub or dry run behind one
interface), the Hub client and its errors, and the model and dataset cards.
"""

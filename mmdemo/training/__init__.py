"""The training layer: training rows and losses, the schedule, the progress board, the run itself,
the background job manager, ZeroGPU and CPU priority. Reports through a
:class:`~mmdemo.training.board.ProgressBoard`; never touches the UI.
"""

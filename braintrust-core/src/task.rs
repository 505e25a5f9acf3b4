//! Carrying the current span into spawned tasks, blocking pools and threads.

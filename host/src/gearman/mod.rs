//! Gearman: codec, worker, admin client.

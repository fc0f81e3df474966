"""Cross-cutting helpers: errors, settings loader, notifications, storage, query helpers."""

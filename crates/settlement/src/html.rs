//! The night report as HTML.

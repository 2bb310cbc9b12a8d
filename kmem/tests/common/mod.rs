pub mod mini;

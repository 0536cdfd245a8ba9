"""What happens after the shutter: manipulations, differentiable JPEG and the sharing channel."""

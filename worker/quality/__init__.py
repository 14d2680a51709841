"""Image-quality measurement: PSNR/SSIM/masked metrics, detection scores, LPIPS."""

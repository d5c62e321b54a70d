/* consumer.c: a new user's first program on an installed libfractal, built with nothing but
 * `pkg-config --cflags --libs fractal` (test_install.py): renders one small PNG on the server
 * named on the command line and saves it. Prints the header's and the library's version. */
#include <fractal/fractal.h>

#include <stdio.h>
#include <string.h>

#define STR(x) #x
#define XSTR(x) STR(x)

int main(int argc, char **argv)
{
    fractal_client *client = NULL;
    fractal_render_options opts = FRACTAL_RENDER_OPTIONS_INIT;
    fractal_image *image = NULL;
    char msg[256] = "";
    int err, status = 1;

    if (argc != 3) {
        fprintf(stderr, "usage: consumer HOST:PORT OUT.png\n");
        return 2;
    }
    /* The numeric macros must spell the string one, and the library must be the header's. */
    if (strcmp(FRACTAL_VERSION, XSTR(FRACTAL_VERSION_MAJOR) "." XSTR(FRACTAL_VERSION_MINOR) "."
               XSTR(FRACTAL_VERSION_PATCH)) != 0 || strcmp(FRACTAL_VERSION, fractal_version()) != 0) {
        fprintf(stderr, "consumer: header %s (%d.%d.%d), library %s\n", FRACTAL_VERSION,
                FRACTAL_VERSION_MAJOR, FRACTAL_VERSION_MINOR, FRACTAL_VERSION_PATCH, fractal_version());
        return 1;
    }
    printf("libfractal %s\n", fractal_version());

    if ((err = fractal_client_new(&client, argv[1], NULL)) < 0) {
        fprintf(stderr, "consumer: %s\n", fractal_strerror(err));
        goto done;
    }
    opts.width = 64;
    opts.height = 48;
    if ((err = fractal_render(&image, client, &opts)) < 0) {
        fprintf(stderr, "consumer: %s\n", fractal_client_last_error(client));
        goto done;
    }
    if ((err = fractal_image_save(image, argv[2], msg, sizeof(msg))) < 0) {
        fprintf(stderr, "consumer: %s\n", msg);
        goto done;
    }
    printf("%ux%u %zu bytes\n", (unsigned)image->width, (unsigned)image->height, image->size);
    status = 0;

done:
    fractal_image_free(image);
    fractal_client_free(client);
    return status;
}

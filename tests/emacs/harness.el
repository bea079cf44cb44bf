;;; harness.el --- what the Emacs client scripts share  -*- lexical-binding: t -*-

;; The scripts run in `emacs --batch', record what they saw in a JSON file ($PHI_OUT) and
;; exit; tests/test_emacs.py asserts on it.  Inputs come from the environment:
;; PHI_CMD (the server command, a JSON list), PHI_SETTINGS (the phiLsp settings, a JSON
;; object), PHI_FILE (the Python file to open), PHI_LINE (1-based line of "    return" in
;; add()), PHI_TIMEOUT (seconds any one wait may take).

(require 'json)
(require 'cl-lib)
(package-initialize)  ; Debian's elpa-* packages

(defvar phi-result (make-hash-table :test 'equal)
  "What the script saw, written to $PHI_OUT as JSON.")

(defvar phi-messages nil
  "The server's window/showMessage notifications, as \"TYPE: MESSAGE\" strings.")

(defvar phi-answer t
  "The user's answer when the client asks whether to apply a server edit.")

(defvar phi-asked 0
  "How many times the client asked the user about a server edit.")

(defun phi-env-json (name)
  (json-parse-string (getenv name) :object-type 'plist :array-type 'list))

(defun phi-put (key value)
  (puthash key value phi-result))

(defun phi-timeout ()
  (string-to-number (or (getenv "PHI_TIMEOUT") "120")))

(defun phi-wait-for (predicate what)
  "Process events until PREDICATE returns non-nil, and return that; an error after
`phi-timeout' seconds, naming WHAT was awaited."
  (let ((deadline (+ (float-time) (phi-timeout))) value)
    (while (and (not (setq value (funcall predicate))) (< (float-time) deadline))
      (accept-process-output nil 0.1))
    (or value (error "timed out after %s s waiting for %s" (phi-timeout) what))))

(defun phi-goto-line (line)
  (goto-char (point-min))
  (forward-line (1- line)))

(defun phi-make-stub (line)
  "Replace LINE (\"    return\") with \"    pass\": add() becomes a docstring stub."
  (phi-goto-line line)
  (delete-region (line-beginning-position) (line-end-position))
  (insert "    pass"))

(defun phi-log-tail ()
  "The end of *Messages* and of any client log buffer: for the test's failure message."
  (mapconcat (lambda (buffer)
               (with-current-buffer buffer
                 (format "--- %s\n%s" (buffer-name)
                         (buffer-substring-no-properties
                          (max (point-min) (- (point-max) 3000)) (point-max)))))
             (cl-remove-if-not (lambda (b) (string-match-p "^\\*\\(Messages\\|.*log\\)" (buffer-name b)))
                               (buffer-list))
             "\n"))

(defun phi-finish ()
  (when (gethash "error" phi-result)
    (phi-put "emacs_log" (phi-log-tail)))
  (phi-put "messages" (vconcat (reverse phi-messages)))
  (phi-put "asked" phi-asked)
  (with-temp-file (getenv "PHI_OUT")
    (insert (json-serialize phi-result)))
  (kill-emacs 0))

(defun phi-run (steps)
  "Run STEPS; whatever happens, write the result and exit."
  (condition-case err
      (funcall steps)
    (error (phi-put "error" (error-message-string err))))
  (phi-finish))

(defun phi-refuse-edits-when-told ()
  "Answer the client's \"apply this server edit?\" question with `phi-answer'."
  (advice-add 'y-or-n-p :override
              (lambda (&rest _) (cl-incf phi-asked) phi-answer)))

;;; harness.el ends here
